"""Dataset page: the dataset card (license, citation, annotators, access), split sizes and the
subjects of each split, for the dataset of the benchmark chosen in the sidebar."""

import pandas as pd
import streamlit as st

from cardbench.dashboard import analysis, data

st.title("Dataset")
bench = data.current_benchmark()
if bench is None:
    data.no_benchmark_message()
    st.stop()
ds = bench["dataset"]
name = ds.get("name", "?")
st.subheader(f"{name} (version {ds.get('version')})")


def _card(dataset: str):
    """(card or None, message)."""
    try:
        from cardbench.datasets.cards import load_card
    except ImportError:
        return None, "Dataset cards are not available in this cardbench installation."
    try:
        return load_card(dataset), ""
    except KeyError as e:
        return None, str(e).strip("'\"")
    except Exception as e:  # noqa: BLE001 - a broken card must not break the page
        return None, f"The card of '{dataset}' could not be read: {e}"


card, why = _card(name)
if card is None:
    st.info(f"No dataset card for '{name}'. {why}", icon=":material/info:")
else:
    st.markdown(f"**{card.title}**")
    st.write(card.description)
    facts = pd.DataFrame([
        ("license", card.license), ("annotators", card.annotators), ("access", card.access),
        ("modality", card.modality), ("field strength", card.field_strength),
        ("label map", str(card.label_map)), ("classes", ", ".join(card.classes)),
        ("card version", card.version), ("splits version", card.splits_version),
    ], columns=["field", "value"])
    st.dataframe(facts, hide_index=True, key="ds_card")
    data.download(facts, f"{name}__card.csv", key="dl_ds_card")
    st.markdown("**Citation**")
    st.code(card.citation, language=None, wrap_lines=True)
    note = (card.raw or {}).get("annotators_note")
    if note:
        st.caption(f"Annotators: {note}")
    if card.access_steps:
        with st.expander(f"Access ({card.access})"):
            for s in card.access_steps:
                st.markdown(f"- {s}")
    if card.known_issues:
        with st.expander("Known issues"):
            for s in card.known_issues:
                st.markdown(f"- {s}")
    if card.splits:
        rows = [(sp, len(subs), ", ".join(subs)) for sp, subs in card.splits.items()]
        sp = pd.DataFrame(rows, columns=["split", "subjects", "subject ids"])
        st.markdown(f"**Standard split** (from the card, version {card.splits_version})")
        st.dataframe(sp, hide_index=True, key="ds_card_splits")
        data.download(sp, f"{name}__card_splits.csv", key="dl_ds_card_splits")

entries, _ = data.board(bench["id"])
if entries.empty:
    st.stop()
st.markdown(f"**What this benchmark scores** (split `{bench['split']}`; from the per-case table of "
            f"entry `{entries['entry'].iloc[0]}`)")
pc = data.entry_or_stop(bench["id"], entries["entry"].iloc[0], details=False)
sizes = analysis.split_sizes(pc)
st.dataframe(sizes, hide_index=True, key="ds_split_sizes")
data.download(sizes, f"{bench['id']}__split_sizes.csv", key="dl_ds_split_sizes")
subj = analysis.subjects_per_split(pc)
per = subj.groupby("split")["subject"].agg(subjects="size", **{"subject ids": lambda s: ", ".join(map(str, s))})
per = per.reset_index()
st.markdown("**Subjects per split** (scored in this benchmark)")
st.dataframe(per, hide_index=True, key="ds_subjects")
data.download(subj, f"{bench['id']}__subjects.csv", key="dl_ds_subjects")
