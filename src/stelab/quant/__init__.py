"""What activations and weights share, below both: LSQ's learned step (:mod:`.lsq`), the scales and integer codes
(:mod:`.scales`) and the layer-name patterns of the converters (:mod:`.patterns`)."""
