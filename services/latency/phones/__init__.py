"""Latency on Android phones over adb: ``benchmark_model`` runs, a farm per device class.

- :mod:`.profiles`: the farm file (adb server, one profile per phone model).
- :mod:`.adb`: phones through the adb server's host protocol.
- :mod:`.discovery`: attached phones and their model, Android version and ABI.
- :mod:`.state` and :mod:`.thermal`: temperature, battery and governor; wait or flag.
- :mod:`.benchmark_output`: what ``benchmark_model`` prints, as numbers.
- :mod:`.runner`: one measurement on one phone.
- :mod:`.oracle`: :class:`PhoneOracle`, the phones of one class with health tracking.
- :mod:`.farm`: build the oracles from a farm file.
"""
