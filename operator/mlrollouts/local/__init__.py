"""mlrollouts.local"""
