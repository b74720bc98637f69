"""The networks of a steganography experiment, built from its `Settings` (book ch. 6-8)."""

from dlbook.stego import gsivat, multi_message, two_stage


def build_networks(s):
  """(generator, extractors, steganalyzer) for the `dlbook.stego.settings.Settings` `s` (not for LSB)."""
  bits = s.message_bits
  size = s.image_size
  recon = s.step.cr_target == "reconstruction"
  if s.method == "two_stage":
    gen = two_stage.two_stage_generator(bits[0], s.stage1_depth, s.generator_channels, size, s.cover_shortcut,
                                        recon, s.residual)
  elif s.method == "multi_message":
    gen = multi_message.multi_message_generator(s.embedding, bits, s.generator_channels, size, s.cover_shortcut,
                                                recon, s.residual)
  else:
    gen = gsivat.gsivat_generator(bits[0], s.generator_channels, size, s.cover_shortcut, s.residual)
  depth = (s.stage1_depth if s.method == "two_stage" else
           multi_message.stage1_depth(s.embedding) if s.method == "multi_message" else two_stage.CONVENTIONAL)
  # Decode each bit where the generator wrote it (ConvAnalyzer.message_side); the single-stage
  # generators mix the message in an FC layer, so they have no message grid.
  sides = [two_stage.embedding_shape(size, depth, b)[0] if depth >= 0 else 0 for b in bits]
  head = "logits" if s.message_loss == "bce" else "tanh"
  extractors = tuple(two_stage.extractor(b, s.extractor_channels, s.head_side, m, head)
                     for b, m in zip(bits, sides))
  return gen, extractors, two_stage.steganalyzer(s.steganalyzer_channels)
