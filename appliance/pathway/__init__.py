"""The cervical screening pathway around the classifier: value sets, the ablation checklist,
the follow-up rules and the programme indicators.

Pure: nothing here reads or writes the record store (``appliance.store`` uses this package, as do
the kiosk, the exchange and the command line). The codes and where they come from are listed in
``docs/pathway-codes.md``.

- ``codes``: every value set of a visit, a referral and a follow-up (``ValueSet``, ``Code``);
- ``eligibility``: the WHO checklist for thermal ablation and cryotherapy;
- ``records``: the checks that make a visit, referral or follow-up record whole (the same checks
  for a save and for an import);
- ``rules``: the next-visit rules table (``pathway.toml``) and the referral facilities;
- ``indicators``: the programme indicators, each with its numerator and denominator;
- ``periods``: DHIS2 period ids in the Gregorian or the Ethiopian calendar.
"""
