"""A prepared dataset on its way into a model: the dataset object, which owns its manifest, classes,
noise and the one train/val rule (dataset), what each Train worker reads (data), augmentation
(augment). Imports corpus, modeling and core."""
