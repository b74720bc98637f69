"""Transfer learning from ImageNet backbones: pretrained against from-scratch (`experiment`)."""
