"""TorchServe: its built-in `image_classifier` handler on the network in PyTorch eager."""
