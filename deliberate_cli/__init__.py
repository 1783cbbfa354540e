"""dacli: declarative deliberative-alignment and AFT experiments (generate, train, eval, report)."""
__version__ = "0.1.0"
