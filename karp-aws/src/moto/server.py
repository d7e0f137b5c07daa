# Starts moto_server (PyPI moto[server]) on a free loopback port for karp's tests and demo, prints
# "port N" once it listens, and exits when the process that started it goes away, so no server
# outlives its test run.
import os
import sys
import time

try:
    from moto.server import ThreadedMotoServer
except ImportError as e:  # pragma: no cover
    print(f"error: {e}", flush=True)
    sys.exit(3)

server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0, verbose=False)
server.start()
print(f"port {server._server.server_port}", flush=True)
parent = os.getppid()
try:
    while os.getppid() == parent:
        time.sleep(0.5)
finally:
    server.stop()
