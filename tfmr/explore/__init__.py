"""`tfmr explore`: a local web page that shows a checkpoint at work.

    session.py    the numbers: tokens, attention, next-token distributions, stepping, the beam tree,
                  positional encodings and the attention export, each from tfmr's own functions
    server.py     the HTTP side (standard library http.server): the page, its assets, a JSON API
    static/       the page itself (plain HTML, JS and CSS; no build step, nothing from the network)

A program, like tfmr/tasks: it imports the library; the library never imports it. The command
line is tfmr/cli/explore.py; docs/explore.md shows the page.
"""
