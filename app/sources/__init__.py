"""Each way a store tells us about an order: a webhook format and its signature check, the REST
follower. Each turns what it hears into the same envelope on `magento.orders`; the agents know a
source only by the envelope's `source` field."""
