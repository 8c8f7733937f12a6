"""Legacy checkpoint rules: mfcc family (see zoo.tools.convert)."""

RULES: dict = {}
