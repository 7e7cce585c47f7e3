"""Visual Turing Test — the only page a rater ever sees.

A welcome page first (what the study is, how long it takes, that the link is personal and
revocable), then one case at a time: the scrollable slab on the left (mouse wheel / keys, window
presets), the 0–10 scale with its anchor words, an optional comment and "Send answer" on the
right — all on one screen from 1366 x 768 up — and a closing page. Order, timing and resume come
from the database (synthct.vtt.flow); nothing here names a case, a file or a source. Every slab
(and, for studies sealed without slabs, every mosaic image) has the study's one byte length and
its own bytes per rater and case slot (synthct.vtt.blinding). A save that fails keeps the score
and comment in the form and says so; sending again retries. Nobody here sees an error's details
(ui/errors.py logs them with a reference).
"""

import streamlit as st

from db.session import session_scope
from synthct.vtt import StudyError, flow
from synthct.vtt.blinding import png_size
from ui import errors, rating
from ui.state import engine, workspace

token = st.session_state.get("token") or st.query_params.get("token")
with session_scope(engine()) as s:
    rater = flow.rater_for_token(s, token)
if rater is None:
    st.error("This invitation link is not valid or has been withdrawn.")
    st.stop()

rating.compact_layout()
with session_scope(engine()) as s:
    case = flow.next_case(s, rater)
    done, total = flow.progress(s, rater)

if case is None:
    rating.finished(total)
    st.stop()

started = f"started-{rater.id}"
if done == 0 and not st.session_state.get(started):
    if rating.welcome(total, done):
        st.session_state[started] = True
        st.rerun()
    st.stop()

with session_scope(engine()) as s:
    slab = flow.case_slab(s, workspace(), rater, case.public_id)
    png = None if slab else flow.case_image(s, workspace(), rater, case.public_id)

head, bar = st.columns([2, 3], vertical_alignment="center")
head.title("Visual Turing Test")
bar.progress(done / max(total, 1), text=f"Case {case.position} of {case.total}")
left, right = st.columns([3, 2], gap="medium")  # the score beside the picture: no scrolling
with left:
    if slab is not None:
        rating.slab_viewer(slab)
    else:
        # An integer width equal to the image's own: Streamlit then sends these exact bytes (a
        # wider target or "auto" could make it re-encode them, which would undo the padding).
        st.image(png, width=png_size(png)[0], output_format="PNG")

with right:
    with st.expander("Instructions", expanded=done == 0, icon=":material/help:"):
        st.markdown(rating.INSTRUCTIONS)
    # Not cleared on submit: if saving fails, the rater's score and comment stay in the form.
    # Each case has its own form and widget keys, so the next case starts empty.
    with st.form(key=f"rate-{case.position}", clear_on_submit=False, border=False):
        score = rating.score_scale(key=f"score-{case.position}")
        comment = st.text_area(
            "Comment (optional)", max_chars=2000, height=68, key=f"comment-{case.position}"
        )
        sent = st.form_submit_button("Send answer", type="primary")
    feedback = st.container()

if sent:
    if score is None:
        feedback.warning("Please pick a score from 0 to 10 first.")
    else:
        try:
            with session_scope(engine()) as s:
                flow.submit(s, rater, case.public_id, score, comment)
        except StudyError as e:
            feedback.error(str(e))
        except Exception as e:  # noqa: BLE001 - a rater never sees a traceback
            ref = errors.report(e, "saving a rating failed")
            feedback.error(
                f"Your answer could not be saved because of a problem on the server "
                f"(reference {ref}). Your score and comment are still filled in: press "
                f"**Send answer** to try again."
            )
        else:
            st.rerun()
