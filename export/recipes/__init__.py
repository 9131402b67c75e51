"""Recipes around the pipeline: packing the sample data for a GPU machine, the GPU training
script the ML lead runs there, and turning what it returns into a signed appliance pack."""
