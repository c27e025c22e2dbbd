"""The MCU link: frame codec (one source with the firmware), McuLink over pyserial, and the
firmware on real MicroPython as a simulated board. Public names: firmware_bridge.mcu_link."""
