"""Opens N TCP connections on loopback, sends a few bytes on each, prints 'ready', holds them."""
import socket, sys, time

n = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
port = listener.getsockname()[1]
held = []
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = listener.accept()
    c.sendall(b"hello")
    held.append((c, s))
print("ready", flush=True)
time.sleep(3600)
