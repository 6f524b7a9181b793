print("cnm-agent")
