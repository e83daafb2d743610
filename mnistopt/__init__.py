"""mnistopt: train, export, validate and benchmark MNIST classifiers for edge devices.

Importing the package imports nothing heavy; torch and TensorFlow load only in the commands
that need them, and `mnistopt.runtime` needs only numpy + onnxruntime / ai_edge_litert.
"""

from . import tfquiet

tfquiet.install()  # before anything below can import TensorFlow; child processes inherit it

__version__ = "0.1.0"
