"""The HTTP surface: quart-trio routes that translate HTTP <-> messages, nothing more."""
