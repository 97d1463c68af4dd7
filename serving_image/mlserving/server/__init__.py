"""mlserving.server"""
