"""Lectures: scripted demos an instructor presents and a class follows (lecture mode of every page)."""
from __future__ import annotations

import streamlit as st

from app.forms.lecture import follow_lecture_link, lecture_buttons, lectures_here, token_field, upload_form
from app.text import plain
from app.views.lecture import lecture_summary

st.title("Lectures")
st.caption("A lecture is a script of steps, each a page with its setup, a title, talking points and what to point "
           "at. Present one to get large text and a QR code the class scans; the class follows your Next and "
           "Previous, and anyone can press “Try it yourself” to train their own copy.")

notice = follow_lecture_link()
if notice:
    st.warning(plain(notice), icon="🎓")
with st.expander("Instructor: the token that moves the class and prepares a lecture"):
    token_field()
lectures, problems = lectures_here()
for problem in problems:
    st.warning(plain(problem) + " That file was skipped; the other lectures load.", icon="📄")
for lecture in lectures.values():
    with st.container(border=True):
        lecture_summary(lecture)
        lecture_buttons(lecture)

st.subheader("Your own lecture", divider="gray")
st.caption("Write a lecture as a small TOML file (README, “Teaching a lecture”) and upload it here, or put it in "
           "the folder named by GRADIENT_LAB_LECTURES_DIR before starting the server.")
upload_form()
