"""Data-subject requests (LGPD Art. 18–20): service functions in
`consent.dsr.service`, execution in `consent.dsr.execute`, reports and signed
links in `consent.dsr.report`. The API for the DPO console is listed in
docs/dsr.md."""
