#ifndef CNM_CLINUX_H
#define CNM_CLINUX_H
#endif
