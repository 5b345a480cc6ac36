"""The PostgreSQL operational store (schema ``orderflow``).

``db`` owns connections and the one transaction helper; ``bulk`` the COPY/upsert paths;
the other modules are repositories, each a handful of functions over a connection.
"""
