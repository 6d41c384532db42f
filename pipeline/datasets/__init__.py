"""Training data: which frames of a video train (``frames``), which patches of them make
a batch (``patches``), how the input side of a pair is degraded (``degrade``), and the
image store pretraining streams its patches from (``images``)."""
