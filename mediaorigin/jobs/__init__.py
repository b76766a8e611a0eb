"""Job queues: run processing jobs in-process, or on `mediaorigin worker` processes anywhere
through a Redis Streams consumer group."""
