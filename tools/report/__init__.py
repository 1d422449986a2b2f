"""The report build's stages; tools/build_report.py is the command line.

common, execute, html_site, pdf, browser_check, quarto.
"""
