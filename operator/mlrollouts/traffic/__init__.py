"""mlrollouts.traffic"""
