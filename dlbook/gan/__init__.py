"""GANs (book ch. 5; survey seed 002): pure adversarial losses, generators and discriminators,
jitted alternating steps."""
