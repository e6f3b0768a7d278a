"""Creates legacy.db, the legacy system's database, with a mix of good and bad rows.
   /usr/bin/python3 legacy/seed.py            (re)create it next to nimbus.yaml
   /usr/bin/python3 legacy/seed.py --check    print how many rows break the rules"""
import os
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DB = os.path.join(HERE, "..", "legacy.db")

ROWS = [
    (1, "ada@example.com", "DE", "2019-04-01"),
    (2, " Grace.Hopper@Example.COM ", "US", "2020-01-15"),   # spaces and capitals
    (3, "linus@example.org", "Finland", "2018-07-30"),       # a name, not a code
    (4, "margaret@example.com", "us", None),                 # lower case, no date
    (5, "ken@example.net", "GB", "2021-11-02"),
    (6, "BARBARA@EXAMPLE.COM", "germany", "2017-02-14"),     # both
]


def bad_rows(db):
    return db.execute(
        "SELECT count(*) FROM customers WHERE email <> lower(trim(email)) OR length(country) <> 2 "
        "OR country <> upper(country) OR signed_up IS NULL").fetchone()[0]


if __name__ == "__main__":
    if "--check" in sys.argv:
        print(bad_rows(sqlite3.connect(DB)))
        sys.exit(0)
    if os.path.exists(DB):
        os.remove(DB)
    db = sqlite3.connect(DB)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, country TEXT NOT NULL, "
               "signed_up TEXT)")
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", ROWS)
    db.commit()
    print("created %s: %d rows, %d to repair" % (os.path.normpath(DB), len(ROWS), bad_rows(db)))
