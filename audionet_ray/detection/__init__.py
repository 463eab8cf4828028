"""Running a model on audio: the bundle format (bundle), keywords in files and long audio (predict),
keyword streams and their FA/h, FRR and DET curve (streaming), the negatives that fire most
(negatives). Imports pipeline and the stages below it."""
