"From photos to training pairs: aligned images with the ID vectors the recognizer answers and LFW."
