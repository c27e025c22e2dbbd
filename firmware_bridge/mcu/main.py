"""Boot entry of the MCU firmware (runs at power-on on the Pico): see app.py."""

import app

app.main()
