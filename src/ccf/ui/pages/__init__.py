"""The dashboard's pages, one module each; each is also the script ``st.navigation`` runs
(``if __name__ == "__main__"``), so a page can be imported and tested on its own."""
