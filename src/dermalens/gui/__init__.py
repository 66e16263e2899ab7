"""Desktop app (Tkinter): logic in `backend`/`batch`, widgets in `app`."""
