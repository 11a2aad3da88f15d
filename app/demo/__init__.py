"""The demo network's files, shipped as package data and loaded by `kengele demo load`.

`gazetteer.csv` (the contract's place columns) holds a few real villages of Ituri and Nord-Kivu,
their province and district given by name; `roster.csv` (the roster columns) holds officers of
two levels and focal points living in those villages. Every number is invented, from the demo
range +243 81 000 1xxx (focal points) and +243 81 000 9xxx (officers).
"""
