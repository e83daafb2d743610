"""The browser as an edge target: a drawing page and a benchmark, on onnxruntime-web.

`mnistopt web [MODEL]` serves the page (`server.py`, `page/`) on 127.0.0.1: draw a digit, the
model reads it in the page (WebAssembly), nothing leaves the browser. `mnistopt bench --device
browser` runs artifacts in headless Chromium through the same page code (`bench.py`).
onnxruntime-web's files come from the npm registry once (`assets.py`, `mnistopt web setup`).
"""
