"""magqb: Magento 2 orders → QuickBooks Online, on Kafka."""

__version__ = "0.1.0"
