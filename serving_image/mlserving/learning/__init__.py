"""mlserving.learning"""
