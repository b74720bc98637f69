"""DARTS search (book ch. 3): the bilevel step, the search loop, and cell pictures."""
