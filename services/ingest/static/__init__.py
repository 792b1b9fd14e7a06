"""The reporter page's files (served by `services.ingest.reporter`); a package so they ship."""
