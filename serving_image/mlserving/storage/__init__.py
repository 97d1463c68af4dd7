"""mlserving.storage"""
