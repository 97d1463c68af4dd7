"""API types of mlrollouts.io/v1alpha1: the one schema source for the CRDs."""
