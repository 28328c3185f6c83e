"""The raw-input pyfunc model and the serialization of fitted stages."""
