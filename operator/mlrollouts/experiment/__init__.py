"""mlrollouts.experiment"""
