"""The bundled use cases' data: card_fraud's generator (``mlloop.data.generator``), flight_delay's public table."""
