"""mlserving.runtimes"""
