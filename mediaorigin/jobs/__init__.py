"""Job queues: run processing jobs in-process or on `mediaorigin worker` processes via Redis Streams."""
