"""mlrollouts.analysis"""
