"""mlserving.router"""
