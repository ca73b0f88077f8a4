"""The router service: forwards stored instances by rules, through durable queues."""
