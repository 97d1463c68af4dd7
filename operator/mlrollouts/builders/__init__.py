"""mlrollouts.builders"""
