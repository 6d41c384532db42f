"""A restore run, by concern: ``layout`` (names, listing, done markers; no Ray),
``session`` (the Ray session and how much of the cluster each kind of work asks for),
``pool`` (the inference actors shared by the run's videos), ``video`` (one video through
the stages), ``row`` (the report row as a type), ``summary`` (the end-of-run table) and
``driver`` (the run itself: ``restore``)."""
