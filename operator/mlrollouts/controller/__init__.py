"""mlrollouts.controller"""
