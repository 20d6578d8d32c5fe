"""vmem's Streamlit app: `vmem app [MEM]` or `streamlit run app.py` (memory from $VMEM_MEMORY, else the sample)."""

import streamlit as st

st.set_page_config(page_title="vmem: visual memory", page_icon=":material/photo_library:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/classify.py", title="Classify", icon=":material/image_search:", default=True),
        st.Page("pages/memory.py", title="Memory", icon=":material/photo_library:"),
        st.Page("pages/unlearning.py", title="Unlearning", icon=":material/delete_sweep:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/monitoring:"),
        st.Page("pages/curate.py", title="Curate", icon=":material/rule:"),
    ]
)
navigation.run()
