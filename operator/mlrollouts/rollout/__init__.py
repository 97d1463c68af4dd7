"""mlrollouts.rollout"""
