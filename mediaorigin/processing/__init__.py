"""Media processing: probe and validate uploads, transcode the ABR ladder, make thumbnails.

Everything here is blocking (PyAV, Pillow, pypdfium2) and runs on a worker thread or in a
`mediaorigin worker` process; the event loop never decodes or encodes.
"""
